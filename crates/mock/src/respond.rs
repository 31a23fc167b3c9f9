//! Building responses: the JSON completion, the SSE stream, partial bodies for faults and
//! OpenAI-shaped errors.
//!
//! JSON is written by hand into one pre-sized buffer per response (per chunk for streams): the
//! words need no escaping and the model name is escaped once per response.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;
use rampart_core::openai::{ErrorBody, ErrorObject};
use rampart_core::{Body, BoxError};
use tokio::time::{Instant, Sleep};

use crate::answer::Answer;
use crate::config::BodyStop;

const DONE: &[u8] = b"data: [DONE]\n\n";
const FINGERPRINT: &str = "fp_rampart_mock";

/// What every body of one answer shares.
pub(crate) struct Meta {
    /// `chatcmpl-mock-<n>`'s n.
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    /// The requested model as a JSON string (escaped, with quotes).
    pub model_json: String,
}

fn write_usage(buf: &mut BytesMut, a: &Answer) {
    let p = a.prompt_tokens();
    let c = a.completion_tokens();
    // Writing to a BytesMut cannot fail.
    let _ = write!(
        buf,
        "{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{t},\
         \"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\
         \"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\
         \"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        t = p + c
    );
}

/// The `chat.completion` JSON body.
pub(crate) fn json_body(meta: &Meta, a: &Answer) -> Bytes {
    let choices = a.choices() as usize;
    let cap = 512 + meta.model_json.len() + choices * (a.text_len_hint() + 160);
    let mut buf = BytesMut::with_capacity(cap);
    let _ = write!(
        buf,
        "{{\"id\":\"chatcmpl-mock-{}\",\"object\":\"chat.completion\",\"created\":{},\"model\":{},\"choices\":[",
        meta.id, meta.created, meta.model_json
    );
    for c in 0..a.choices() {
        if c > 0 {
            buf.put_u8(b',');
        }
        let _ = write!(
            buf,
            "{{\"index\":{c},\"message\":{{\"role\":\"assistant\",\"content\":\""
        );
        for i in 0..a.tokens() {
            let (w, s) = a.token(c, i);
            buf.put_slice(w.as_bytes());
            buf.put_slice(s.as_bytes());
        }
        let _ = write!(
            buf,
            "\",\"refusal\":null,\"annotations\":[]}},\"logprobs\":null,\"finish_reason\":\"{}\"}}",
            a.finish_reason()
        );
    }
    buf.put_slice(b"],\"usage\":");
    write_usage(&mut buf, a);
    let _ = write!(
        buf,
        ",\"service_tier\":\"default\",\"system_fingerprint\":\"{FINGERPRINT}\"}}"
    );
    buf.freeze()
}

/// A `200` JSON response.
pub(crate) fn json_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `200` SSE response.
pub(crate) fn sse_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The body error of a cut.
fn cut_error() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "rampart-mock: body cut by fault injection",
    ))
}

/// A JSON body that stops half-way: a body error (cut) or nothing more ever (stall). An
/// error-event fault does not apply to JSON: the whole body is sent.
pub(crate) fn partial_json(full: Bytes, stop: BodyStop) -> Body {
    use futures_util::StreamExt as _;
    let (n, cut) = match stop {
        BodyStop::Cut(n) => (n, true),
        BodyStop::Stall(n) => (n, false),
        BodyStop::ErrorEvent(_) => return Body::from_bytes(full),
    };
    let head = if n == 0 {
        None
    } else {
        Some(Ok::<_, BoxError>(Frame::data(full.slice(..full.len() / 2))))
    };
    let head = futures_util::stream::iter(head);
    if cut {
        // Yield once before failing, so that a server flushes what was sent before the cut.
        let tail = futures_util::stream::once(async {
            tokio::task::yield_now().await;
            Err(cut_error())
        });
        Body::new(StreamBody::new(head.chain(tail)))
    } else {
        Body::new(StreamBody::new(head.chain(futures_util::stream::pending())))
    }
}

/// The events of one streamed answer, rendered on demand.
pub(crate) trait Events: Send + Unpin + 'static {
    /// Events in the whole stream, the last one being the end marker (`[DONE]`,
    /// `message_stop`).
    fn total(&self) -> u64;
    /// The wait before event `k`.
    fn delay_before(&self, k: u64) -> Duration;
    /// Event `k`'s bytes.
    fn render(&self, k: u64) -> Bytes;
    /// The error event of an error-event fault.
    fn error_event(&self) -> Bytes;
}

/// Drives a stream of [`Events`]: latency, then one event per poll; cuts, stalls and error
/// events from faults. No allocation beyond each event's bytes (and one `Sleep` per stream when
/// there is latency).
pub(crate) struct SseStream<E> {
    events: E,
    next: u64,
    total: u64,
    stop: Option<(u64, BodyStop)>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    cut_flushed: bool,
    finished: bool,
}

impl<E: Events> SseStream<E> {
    pub(crate) fn new(events: E, stop: Option<BodyStop>) -> Self {
        let total = events.total();
        // Never past the events before the end marker, so it never follows a fault.
        let stop = stop.map(|s| {
            let k = match s {
                BodyStop::Cut(k) | BodyStop::Stall(k) | BodyStop::ErrorEvent(k) => k,
            };
            ((k as u64).min(total.saturating_sub(1)), s)
        });
        Self {
            events,
            next: 0,
            total,
            stop,
            sleep: None,
            armed: false,
            cut_flushed: false,
            finished: false,
        }
    }

    /// Wraps the stream as a [`Body`].
    pub(crate) fn into_body(self) -> Body {
        Body::new(StreamBody::new(self))
    }
}

impl<E: Events> Stream for SseStream<E> {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished || this.next >= this.total {
            return Poll::Ready(None);
        }
        let k = this.next;
        if let Some((at, stop)) = this.stop
            && k == at
        {
            match stop {
                BodyStop::Cut(_) => {
                    if !this.cut_flushed {
                        // One `Pending` first: a server flushes the events sent so far before
                        // the error aborts the connection.
                        this.cut_flushed = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    this.finished = true;
                    return Poll::Ready(Some(Err(cut_error())));
                }
                BodyStop::ErrorEvent(_) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::data(this.events.error_event()))));
                }
                // A stall: never wakes again.
                BodyStop::Stall(_) => return Poll::Pending,
            }
        }
        let delay = this.events.delay_before(k);
        if !delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if !this.armed {
                let now = Instant::now();
                // As `tokio::time::sleep` does: an absurd delay means "about never".
                let deadline = now
                    .checked_add(delay)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
                sleep.as_mut().reset(deadline);
                this.armed = true;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.armed = false;
        }
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(this.events.render(k)))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.total - self.next).unwrap_or(usize::MAX);
        (0, Some(left))
    }
}

/// An SSE event of an OpenAI stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Role(u32),
    Content(u32, u64),
    Finish(u32),
    Usage,
    Done,
}

/// The events of a streamed chat completion.
pub(crate) struct ChunkEvents {
    answer: Answer,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"system_fingerprint":..,"choices":[`
    head: Box<str>,
    /// `]}\n\n`, or `],"usage":null}\n\n` when usage was asked for.
    tail: &'static str,
    include_usage: bool,
    total: u64,
    first_token: Duration,
    chunk_gap: Duration,
}

impl ChunkEvents {
    pub(crate) fn new(
        meta: &Meta,
        answer: Answer,
        include_usage: bool,
        first_token: Duration,
        chunk_gap: Duration,
    ) -> Self {
        let n = u64::from(answer.choices());
        let total = n + answer.tokens() * n + n + u64::from(include_usage) + 1;
        let mut head = String::with_capacity(160 + meta.model_json.len());
        let _ = write!(
            head,
            "data: {{\"id\":\"chatcmpl-mock-{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"service_tier\":\"default\",\"system_fingerprint\":\"{FINGERPRINT}\",\"choices\":[",
            meta.id, meta.created, meta.model_json
        );
        Self {
            answer,
            head: head.into_boxed_str(),
            tail: if include_usage {
                "],\"usage\":null}\n\n"
            } else {
                "]}\n\n"
            },
            include_usage,
            total,
            first_token,
            chunk_gap,
        }
    }

    fn event(&self, k: u64) -> Event {
        let n = u64::from(self.answer.choices());
        let content = self.answer.tokens() * n;
        // `k < n` etc. make the casts below lossless (n <= MAX_CHOICES).
        if k < n {
            Event::Role(k as u32)
        } else if k < n + content {
            let j = k - n;
            Event::Content((j % n) as u32, j / n)
        } else if k < n + content + n {
            Event::Finish((k - n - content) as u32)
        } else if self.include_usage && k == n + content + n {
            Event::Usage
        } else {
            Event::Done
        }
    }
}

impl Events for ChunkEvents {
    fn total(&self) -> u64 {
        self.total
    }

    /// `first_token` before the first event after the role chunks, `chunk_gap` before each
    /// later content position.
    fn delay_before(&self, k: u64) -> Duration {
        let n = u64::from(self.answer.choices());
        if k == n {
            return self.first_token;
        }
        match self.event(k) {
            Event::Content(0, i) if i > 0 => self.chunk_gap,
            _ => Duration::ZERO,
        }
    }

    fn render(&self, k: u64) -> Bytes {
        let mut buf;
        match self.event(k) {
            Event::Done => return Bytes::from_static(DONE),
            Event::Role(c) => {
                buf = BytesMut::with_capacity(self.head.len() + self.tail.len() + 96);
                buf.put_slice(self.head.as_bytes());
                let _ = write!(
                    buf,
                    "{{\"index\":{c},\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}"
                );
            }
            Event::Content(c, i) => {
                let (w, s) = self.answer.token(c, i);
                buf = BytesMut::with_capacity(self.head.len() + self.tail.len() + 80 + w.len());
                buf.put_slice(self.head.as_bytes());
                let _ = write!(
                    buf,
                    "{{\"index\":{c},\"delta\":{{\"content\":\"{w}{s}\"}},\"logprobs\":null,\"finish_reason\":null}}"
                );
            }
            Event::Finish(c) => {
                buf = BytesMut::with_capacity(self.head.len() + self.tail.len() + 80);
                buf.put_slice(self.head.as_bytes());
                let _ = write!(
                    buf,
                    "{{\"index\":{c},\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{}\"}}",
                    self.answer.finish_reason()
                );
            }
            Event::Usage => {
                buf = BytesMut::with_capacity(self.head.len() + 320);
                buf.put_slice(self.head.as_bytes());
                buf.put_slice(b"],\"usage\":");
                write_usage(&mut buf, &self.answer);
                buf.put_slice(b"}\n\n");
                return buf.freeze();
            }
        }
        buf.put_slice(self.tail.as_bytes());
        buf.freeze()
    }

    fn error_event(&self) -> Bytes {
        Bytes::from_static(
            b"data: {\"error\":{\"message\":\"The server had an error while processing your request (simulated by rampart-mock).\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        )
    }
}

/// The OpenAI error `type` and `code` the mock uses for a status.
fn error_shape(status: StatusCode) -> (&'static str, Option<&'static str>, &'static str) {
    match status.as_u16() {
        400 => (
            "invalid_request_error",
            Some("invalid_request"),
            "Simulated bad request.",
        ),
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        ),
        403 => (
            "invalid_request_error",
            Some("permission_denied"),
            "You are not allowed to use this model.",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        408 => (
            "invalid_request_error",
            Some("request_timeout"),
            "The request timed out.",
        ),
        413 => (
            "invalid_request_error",
            Some("request_too_large"),
            "The request is too large.",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests (simulated by rampart-mock).",
        ),
        500 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        502 => ("server_error", Some("bad_gateway"), "Bad gateway."),
        503 => (
            "server_error",
            Some("service_unavailable"),
            "The engine is currently overloaded, please try again later.",
        ),
        504 => ("server_error", Some("timeout"), "The server timed out."),
        529 => ("overloaded_error", Some("overloaded"), "Overloaded"),
        _ if status.is_server_error() => ("server_error", None, "Simulated server error."),
        _ => ("invalid_request_error", None, "Simulated error."),
    }
}

/// An OpenAI-shaped error response.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: impl Into<String>,
) -> Response<Body> {
    let body = ErrorBody {
        error: ErrorObject {
            message: message.into(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.map(str::to_owned),
        },
    };
    let mut resp = Response::new(Body::json(&body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The response of a status fault, with `retry-after` / `retry-after-ms` when given.
pub(crate) fn fault_response(status: StatusCode, retry_after: Option<Duration>) -> Response<Body> {
    let (kind, code, message) = error_shape(status);
    let mut resp = error_response(status, kind, code, None, message);
    if let Some(after) = retry_after {
        let h = resp.headers_mut();
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(rampart_core::error::retry_after_secs(after)),
        );
        // Milliseconds, rounded up like the seconds.
        let ms = u64::try_from(after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        h.insert(rampart_core::headers::RETRY_AFTER_MS, HeaderValue::from(ms));
    }
    resp
}
