//! Plain configuration data: [`MockConfig`], [`Latency`], and the fault description [`Fault`].

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

/// How a [`MockProvider`](crate::MockProvider) behaves when nothing is injected.
///
/// Deserialises from the gateway's config (`latency = { base = "20ms" }`, `output_tokens = 32`);
/// every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MockConfig {
    /// Simulated latency (changeable later with
    /// [`MockProvider::set_latency`](crate::MockProvider::set_latency)).
    pub latency: Latency,
    /// Answer length in tokens when the client sends neither `max_completion_tokens` nor
    /// `max_tokens`. Default [`DEFAULT_OUTPUT_TOKENS`](crate::DEFAULT_OUTPUT_TOKENS) (16).
    pub output_tokens: Option<u32>,
    /// When set, requests without `Authorization: Bearer <this>` (Anthropic mode:
    /// `x-api-key: <this>`) get a 401 error.
    pub require_api_key: Option<String>,
    /// The wire protocol: OpenAI's chat completions (default) or Anthropic's Messages API.
    pub api: MockApi,
}

/// The API a [`MockProvider`](crate::MockProvider) speaks (`api = "openai"` or
/// `api = "anthropic"` in config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MockApi {
    /// `POST /v1/chat/completions`, OpenAI JSON and `chat.completion.chunk` streams.
    #[default]
    Openai,
    /// `POST /v1/messages`: Anthropic's Messages API, its JSON answers, event streams and error
    /// bodies (see the crate docs).
    Anthropic,
}

/// Simulated latency. All zero by default; when all are zero the mock never sleeps.
///
/// - headers wait `base + rand(0..jitter)`;
/// - a stream's first chunk after the role chunk waits `first_token`, and every later content
///   chunk waits `chunk_gap` (the finish chunk, the usage chunk and `[DONE]` follow the last
///   content chunk at once);
/// - a JSON answer is only sent once it is "generated": its headers wait
///   `base + jitter + first_token + (tokens - 1) × chunk_gap`, the time the same stream would take
///   to finish.
///
/// Sleeps use `tokio::time::sleep`, so tests on paused time see exact virtual durations (at
/// tokio's 1 ms timer resolution; a jitter of 1 ms or more is drawn in whole milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Fixed delay before the response headers (`"20ms"`).
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Upper bound (exclusive) of a uniformly random extra delay before the headers.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Delay before the first content chunk of a stream (time to first token).
    #[serde(with = "humantime_serde")]
    pub first_token: Duration,
    /// Delay between two content chunks of a stream.
    #[serde(with = "humantime_serde")]
    pub chunk_gap: Duration,
}

impl Latency {
    /// No latency at all (the default).
    pub const ZERO: Latency = Latency {
        base: Duration::ZERO,
        jitter: Duration::ZERO,
        first_token: Duration::ZERO,
        chunk_gap: Duration::ZERO,
    };

    /// Only a fixed delay before the headers.
    pub fn fixed(base: Duration) -> Self {
        Self { base, ..Self::ZERO }
    }

    /// Whether every delay is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

/// Where a [`Fault`] makes the mock hang forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Never send the response headers.
    BeforeHeaders,
    /// Send the headers and this many SSE events (for a JSON answer: nothing when 0, else the
    /// first half of the body), then never send anything again. A stall never comes after the
    /// events before `[DONE]`, so `[DONE]` is never sent.
    AfterChunks(usize),
}

/// A failure to inject, globally or for one model
/// ([`MockProvider::set_fault`](crate::MockProvider::set_fault)).
///
/// Each request rolls once against [`failure_rate`](Fault::failure_rate); when the fault applies,
/// its first matching field decides what happens, in this order:
///
/// 1. `stall: Some(Stall::BeforeHeaders)` — hang forever before the headers;
/// 2. `reset_before_headers` — in-process, `Err(io::Error)` of kind `ConnectionReset`; over HTTP,
///    the connection closes without a response;
/// 3. `status` — that status with an OpenAI-shaped error body and, when `retry_after` is set,
///    `retry-after` (whole seconds, rounded up) and `retry-after-ms`;
/// 4. `cut_after_chunks` / `stall: Some(Stall::AfterChunks(_))` / `error_event_after_chunks` — a
///    normal `200` whose body breaks (a body error), hangs part-way, or (streams only) sends an
///    error event part-way and ends; the first set wins, in that order.
///
/// Counting happens before any fault; the head latency (`base + jitter`) applies before steps 2–4.
///
/// A fault with no field set does nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    /// Answer with this status and an OpenAI-shaped error body
    /// (`{"error":{"message","type","param","code"}}`).
    pub status: Option<StatusCode>,
    /// Sent as `retry-after` (whole seconds, rounded up) and `retry-after-ms` on the fault's error
    /// response (meaningful with 429, 503 and 529; sent with whatever `status` is set).
    pub retry_after: Option<Duration>,
    /// Probability that the fault applies to a given request. Values strictly between 0 and 1 are
    /// probabilities; **anything else (0.0, the default, 1.0, negative, NaN) means always**, so
    /// `Fault { status: Some(..), ..Default::default() }` always fires. To stop a fault, clear it.
    pub failure_rate: f64,
    /// In-process: `Err(io::Error)` of kind `ConnectionReset`; over HTTP: the connection closes
    /// with no response.
    pub reset_before_headers: bool,
    /// Streams: a body error after this many SSE events, never `[DONE]` (when N reaches the
    /// events before `[DONE]`, the cut comes just before it). JSON: a body error after the first
    /// half of the body (at once when 0).
    pub cut_after_chunks: Option<usize>,
    /// Hang forever before the headers or after N chunks.
    pub stall: Option<Stall>,
    /// Streams: after this many SSE events, one error event and the end of the body (OpenAI
    /// mode: `data: {"error":{..,"type":"server_error"}}`; Anthropic mode: `event: error` with an
    /// `overloaded_error`), never `[DONE]` / `message_stop`. JSON answers are not affected.
    pub error_event_after_chunks: Option<usize>,
}

impl Fault {
    /// Answer every request with `status` and an OpenAI-shaped error body.
    pub fn status_code(status: StatusCode) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// 429 `rate_limit_exceeded` with `retry-after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::status_code(StatusCode::TOO_MANY_REQUESTS).with_retry_after(retry_after)
    }

    /// 529 `overloaded_error` (Anthropic's overload status).
    pub fn overloaded() -> Self {
        // 529 is in the valid range; `from_u16` cannot fail for it.
        Self {
            status: StatusCode::from_u16(529).ok(),
            ..Self::default()
        }
    }

    /// Close the connection before any response.
    pub fn reset() -> Self {
        Self {
            reset_before_headers: true,
            ..Self::default()
        }
    }

    /// Break the body after `chunks` SSE events (JSON: half-way).
    pub fn cut_after(chunks: usize) -> Self {
        Self {
            cut_after_chunks: Some(chunks),
            ..Self::default()
        }
    }

    /// End a stream with an error event after `chunks` SSE events.
    pub fn error_event_after(chunks: usize) -> Self {
        Self {
            error_event_after_chunks: Some(chunks),
            ..Self::default()
        }
    }

    /// Hang forever at `stall`.
    pub fn stalled(stall: Stall) -> Self {
        Self {
            stall: Some(stall),
            ..Self::default()
        }
    }

    /// The same fault with a `retry-after`.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The same fault applying to a fraction `rate` of requests (see
    /// [`failure_rate`](Fault::failure_rate)).
    pub fn with_failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Whether the fault does anything at all.
    pub fn is_active(&self) -> bool {
        self.status.is_some()
            || self.reset_before_headers
            || self.cut_after_chunks.is_some()
            || self.stall.is_some()
            || self.error_event_after_chunks.is_some()
    }

    /// Rolls the dice for one request.
    pub(crate) fn fires(&self) -> bool {
        let p = self.failure_rate;
        if p > 0.0 && p < 1.0 {
            rand::random::<f64>() < p
        } else {
            true
        }
    }

    /// Where the body of a successful answer breaks, if it does.
    pub(crate) fn body_stop(&self) -> Option<BodyStop> {
        match (
            self.cut_after_chunks,
            self.stall,
            self.error_event_after_chunks,
        ) {
            (Some(n), _, _) => Some(BodyStop::Cut(n)),
            (None, Some(Stall::AfterChunks(n)), _) => Some(BodyStop::Stall(n)),
            (None, _, Some(n)) => Some(BodyStop::ErrorEvent(n)),
            _ => None,
        }
    }
}

/// How a body stops early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyStop {
    /// A body error after N events.
    Cut(usize),
    /// Pending forever after N events.
    Stall(usize),
    /// An error event after N events, then the end (streams only).
    ErrorEvent(usize),
}
