//! Anthropic mode: `POST /v1/messages`, the Messages API's JSON answers, event streams and error
//! bodies, with the same answers, latency and faults as the OpenAI mode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use rampart_core::body::CollectError;
use rampart_core::{Body, BoxError};
use serde_json::{Value, json};

use crate::answer::{Answer, text_tokens};
use crate::config::Stall;
use crate::provider::Inner;
use crate::respond::{self, Events, SseStream};
use crate::service::{MAX_BODY_BYTES, head_delay, pause};

/// An Anthropic-shaped error response: `{"type":"error","error":{"type","message"}}`.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
) -> Response<Body> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message.into()}});
    let mut resp = Response::new(Body::json(&body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The Anthropic error `type` and message the mock uses for a status.
fn error_shape(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid_request_error", "Simulated bad request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit (simulated by rampart-mock).",
        ),
        529 => ("overloaded_error", "Overloaded"),
        _ if status.is_server_error() => ("api_error", "Internal server error."),
        _ => ("invalid_request_error", "Simulated error."),
    }
}

/// The response of a status fault, with `retry-after` (whole seconds, rounded up) when given.
fn fault_response(status: StatusCode, retry_after: Option<Duration>) -> Response<Body> {
    let (kind, message) = error_shape(status);
    let mut resp = error_response(status, kind, message);
    if let Some(after) = retry_after {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(rampart_core::error::retry_after_secs(after)),
        );
    }
    resp
}

fn invalid(message: impl Into<String>) -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// A 401 when the config requires a key and `x-api-key` does not carry it.
fn check_key(inner: &Inner, headers: &HeaderMap) -> Option<Response<Body>> {
    let want = inner.require_api_key.as_deref()?;
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(k) if k == want => None,
        _ => Some(error_response(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )),
    }
}

/// One message for the tokenizer: its role, its text, and whether it ends with a cache
/// breakpoint (`cache_control` on one of its blocks).
struct Turn {
    role: String,
    text: String,
    cache_mark: bool,
}

/// What the mock needs from a Messages API request.
struct Parsed {
    model: String,
    stream: bool,
    max_tokens: u64,
    turns: Vec<Turn>,
    /// The tool the answer calls, and whether the request forced it (no text then).
    tool: Option<(String, bool)>,
}

/// The text of `content` (a string or blocks) and whether a block carries `cache_control`.
fn content_text(content: &Value) -> Result<(String, bool), String> {
    match content {
        Value::String(s) => Ok((s.clone(), false)),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            let mut mark = false;
            for b in blocks {
                mark |= b.get("cache_control").is_some_and(|c| !c.is_null());
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .ok_or("a text block needs its text")?
                            .to_owned(),
                    ),
                    Some("tool_use") => {
                        parts.push(b.get("input").map(Value::to_string).unwrap_or_default());
                    }
                    Some("tool_result") => {
                        if let Some(c) = b.get("content") {
                            parts.push(content_text(c)?.0);
                        }
                    }
                    Some("image" | "document") => {}
                    Some(other) => return Err(format!("unsupported content block type '{other}'")),
                    None => return Err("a content block needs a type".into()),
                }
            }
            Ok((parts.join("\n"), mark))
        }
        _ => Err("content must be a string or a list of content blocks".into()),
    }
}

fn parse(body: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("model: Field required")?
        .to_owned();
    let max_tokens = v
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .ok_or("max_tokens: Field required (a positive integer)")?;
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: at least one message is required")?;
    let mut turns = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = v.get("system").filter(|s| !s.is_null()) {
        let (text, cache_mark) = content_text(system).map_err(|e| format!("system: {e}"))?;
        turns.push(Turn {
            role: "system".into(),
            text,
            cache_mark,
        });
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        let content = m
            .get("content")
            .ok_or(format!("messages.{i}.content: Field required"))?;
        let (text, cache_mark) =
            content_text(content).map_err(|e| format!("messages.{i}.content: {e}"))?;
        turns.push(Turn {
            role: role.into(),
            text,
            cache_mark,
        });
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = v.get("tools").and_then(Value::as_array);
    let choice = v.get("tool_choice");
    let choice_type = choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let tool = match tools.and_then(|t| t.first()) {
        Some(first) if choice_type != "none" => {
            let name = match choice_type {
                "tool" => choice.and_then(|c| c.get("name")).and_then(Value::as_str),
                _ => first.get("name").and_then(Value::as_str),
            }
            .ok_or("tools: a tool needs a name")?;
            Some((name.to_owned(), matches!(choice_type, "any" | "tool")))
        }
        _ => None,
    };
    Ok(Parsed {
        model,
        stream,
        max_tokens,
        turns,
        tool,
    })
}

/// Usage of one answer as the Messages API reports it.
#[derive(Clone, Copy)]
struct Usage {
    input: u64,
    cache_write: u64,
    cache_read: u64,
    output: u64,
}

impl Usage {
    fn json(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output,
        })
    }
}

/// Splits the prompt at the last cache breakpoint: the first request with a given prefix
/// writes it to the simulated prompt cache, later ones read it.
fn usage(inner: &Inner, p: &Parsed, answer: &Answer) -> Usage {
    let prompt = answer.prompt_tokens();
    let mut u = Usage {
        input: prompt,
        cache_write: 0,
        cache_read: 0,
        output: answer.completion_tokens(),
    };
    let Some(last) = p.turns.iter().rposition(|t| t.cache_mark) else {
        return u;
    };
    let prefix = &p.turns[..=last];
    let tokens: u64 = prefix.iter().map(|t| text_tokens(&t.text)).sum();
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        p.model.hash(&mut h);
        for t in prefix {
            t.role.hash(&mut h);
            t.text.hash(&mut h);
        }
        h.finish()
    };
    if inner.prompt_cache_hit(key) {
        u.cache_read = tokens;
    } else {
        u.cache_write = tokens;
    }
    u.input = prompt - tokens;
    u
}

/// Serves `POST /v1/messages`.
pub(crate) async fn messages(
    inner: Arc<Inner>,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect_limited(MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(CollectError::TooLarge { .. }) => {
            return Ok(fault_response(StatusCode::PAYLOAD_TOO_LARGE, None));
        }
        Err(CollectError::Read(e)) => {
            return Ok(invalid(format!("The request body could not be read: {e}")));
        }
    };
    inner.record(&parts.headers, bytes.clone());
    let p = match parse(&bytes) {
        Ok(p) => p,
        Err(e) => return Ok(invalid(e)),
    };
    inner.count(&p.model);
    if let Some(denied) = check_key(&inner, &parts.headers) {
        return Ok(denied);
    }
    if !parts.headers.contains_key("anthropic-version") {
        return Ok(invalid("anthropic-version: header is required"));
    }
    let fault = inner.fault_for(&p.model);
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
            return Ok(fault_response(status, f.retry_after));
        }
        stop = f.body_stop();
    }
    // The answer's natural length is the configured output length; `max_tokens` cuts it.
    let natural = u64::from(inner.output_tokens);
    let tokens = p.max_tokens.min(natural);
    let stop_reason = match (&p.tool, p.max_tokens < natural) {
        (Some(_), _) => "tool_use",
        (None, true) => "max_tokens",
        (None, false) => "end_turn",
    };
    let answer = Answer::from_messages(
        &p.model,
        p.turns.iter().map(|t| (t.role.as_str(), t.text.as_str())),
        tokens,
        "stop",
    );
    let usage = usage(&inner, &p, &answer);
    let id = inner.next_id();
    let msg = Message {
        id: format!("msg_mock_{id:024}"),
        tool_id: format!("toolu_mock_{id:024}"),
        model: p.model.clone(),
        text: answer.text(0),
        tool: p.tool.clone(),
        stop_reason,
        usage,
        answer,
        tokens: answer.tokens(),
        first_token: latency.first_token,
        chunk_gap: latency.chunk_gap,
    };
    if p.stream {
        let events = MessageEvents::new(msg);
        return Ok(respond::sse_response(
            SseStream::new(events, stop).into_body(),
        ));
    }
    let gaps = u32::try_from(answer.tokens().saturating_sub(1)).unwrap_or(u32::MAX);
    pause(
        latency
            .first_token
            .saturating_add(latency.chunk_gap.saturating_mul(gaps)),
    )
    .await;
    let bytes = Bytes::from(msg.json().to_string());
    let body = match stop {
        Some(stop) => respond::partial_json(bytes, stop),
        None => Body::from_bytes(bytes),
    };
    Ok(respond::json_response(body))
}

/// Everything one answer says.
struct Message {
    id: String,
    tool_id: String,
    model: String,
    text: String,
    tool: Option<(String, bool)>,
    stop_reason: &'static str,
    usage: Usage,
    answer: Answer,
    tokens: u64,
    first_token: Duration,
    chunk_gap: Duration,
}

impl Message {
    fn has_text(&self) -> bool {
        !matches!(self.tool, Some((_, true)))
    }

    fn tool_input(&self) -> String {
        json!({ "text": self.text }).to_string()
    }

    fn json(&self) -> Value {
        let mut content = Vec::new();
        if self.has_text() {
            content.push(json!({"type": "text", "text": self.text}));
        }
        if let Some((name, _)) = &self.tool {
            content.push(json!({"type": "tool_use", "id": self.tool_id, "name": name,
                                "input": {"text": self.text}}));
        }
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": self.usage.json(self.usage.output),
        })
    }
}

/// The tool input is streamed in this many `input_json_delta` fragments.
const TOOL_PIECES: u64 = 3;

/// One event of a Messages API stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Start,
    TextStart,
    Ping,
    TextDelta(u64),
    TextStop,
    ToolStart,
    ToolDelta(u64),
    ToolStop,
    MessageDelta,
    MessageStop,
}

/// `message_start`, a text block (`content_block_start`, `ping`, one `text_delta` per word,
/// `content_block_stop`), a tool-use block when a tool is called (its input in
/// [`TOOL_PIECES`] `input_json_delta`s), `message_delta` and `message_stop`.
struct MessageEvents {
    msg: Message,
    tool_json: String,
    total: u64,
}

impl MessageEvents {
    fn new(msg: Message) -> Self {
        let tool_json = msg.tool_input();
        let text = if msg.has_text() { msg.tokens + 3 } else { 0 };
        let tool = if msg.tool.is_some() {
            TOOL_PIECES + 2 + u64::from(!msg.has_text())
        } else {
            0
        };
        Self {
            total: 1 + text + tool + 2,
            msg,
            tool_json,
        }
    }

    fn event(&self, k: u64) -> Ev {
        let mut k = k;
        if k == 0 {
            return Ev::Start;
        }
        k -= 1;
        if self.msg.has_text() {
            match k {
                0 => return Ev::TextStart,
                1 => return Ev::Ping,
                _ => k -= 2,
            }
            if k < self.msg.tokens {
                return Ev::TextDelta(k);
            }
            k -= self.msg.tokens;
            if k == 0 {
                return Ev::TextStop;
            }
            k -= 1;
        }
        if self.msg.tool.is_some() {
            if k == 0 {
                return Ev::ToolStart;
            }
            k -= 1;
            if !self.msg.has_text() {
                if k == 0 {
                    return Ev::Ping;
                }
                k -= 1;
            }
            if k < TOOL_PIECES {
                return Ev::ToolDelta(k);
            }
            k -= TOOL_PIECES;
            if k == 0 {
                return Ev::ToolStop;
            }
            k -= 1;
        }
        if k == 0 {
            Ev::MessageDelta
        } else {
            Ev::MessageStop
        }
    }

    fn tool_piece(&self, i: u64) -> &str {
        // ASCII JSON (the words need no escaping): every index is a char boundary.
        let len = self.tool_json.len() as u64;
        let at = |j: u64| usize::try_from(j * len / TOOL_PIECES).unwrap_or(0);
        self.tool_json.get(at(i)..at(i + 1)).unwrap_or_default()
    }

    fn text_index(&self) -> u64 {
        0
    }

    fn tool_index(&self) -> u64 {
        u64::from(self.msg.has_text())
    }
}

fn sse(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

impl Events for MessageEvents {
    fn total(&self) -> u64 {
        self.total
    }

    fn delay_before(&self, k: u64) -> Duration {
        match self.event(k) {
            Ev::TextDelta(0) => self.msg.first_token,
            Ev::ToolDelta(0) if !self.msg.has_text() => self.msg.first_token,
            Ev::TextDelta(_) | Ev::ToolDelta(_) => self.msg.chunk_gap,
            _ => Duration::ZERO,
        }
    }

    fn render(&self, k: u64) -> Bytes {
        let m = &self.msg;
        match self.event(k) {
            Ev::Start => sse(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": m.id, "type": "message", "role": "assistant", "model": m.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": m.usage.json(1),
                }}),
            ),
            Ev::TextStart => sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.text_index(),
                        "content_block": {"type": "text", "text": ""}}),
            ),
            Ev::Ping => sse("ping", &json!({"type": "ping"})),
            Ev::TextDelta(i) => {
                let (w, s) = m.answer.token(0, i);
                sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.text_index(),
                            "delta": {"type": "text_delta", "text": format!("{w}{s}")}}),
                )
            }
            Ev::TextStop => sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.text_index()}),
            ),
            Ev::ToolStart => {
                let name = m.tool.as_ref().map(|(n, _)| n.as_str()).unwrap_or_default();
                sse(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": self.tool_index(),
                            "content_block": {"type": "tool_use", "id": m.tool_id,
                                              "name": name, "input": {}}}),
                )
            }
            Ev::ToolDelta(i) => sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.tool_index(),
                        "delta": {"type": "input_json_delta", "partial_json": self.tool_piece(i)}}),
            ),
            Ev::ToolStop => sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.tool_index()}),
            ),
            Ev::MessageDelta => sse(
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": m.stop_reason, "stop_sequence": null},
                        "usage": {"output_tokens": m.usage.output}}),
            ),
            Ev::MessageStop => sse("message_stop", &json!({"type": "message_stop"})),
        }
    }

    fn error_event(&self) -> Bytes {
        sse(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
    }
}
