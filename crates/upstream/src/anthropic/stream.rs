//! Messages API event stream → `chat.completion.chunk` stream.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http_body::{Frame, SizeHint};
use rampart_core::sse::split_lines;
use rampart_core::{Body, BoxError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{Detail, to_openai};
use super::response::{AnthropicUsage, Block, finish_reason};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        content_block: Block,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<UsageUpdate>,
    },
    MessageStop {},
    Error {
        error: Detail,
    },
    /// `ping`, and event types added later (the API reference asks clients to ignore them).
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, ...
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// `usage` of `message_delta`: cumulative counts, each optional.
#[derive(Deserialize, Default)]
struct UsageUpdate {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// A tool-use block being streamed.
struct ToolBlock {
    block: u64,
    index: u32,
    sent_args: bool,
}

/// Turns Messages API stream events into `chat.completion.chunk` SSE events, incrementally.
///
/// `message_start` gives the role chunk, `text_delta`s content chunks, a `tool_use` block start
/// a tool-call chunk with id and name and its `input_json_delta`s argument fragments,
/// `message_delta` the finish chunk, and `message_stop` a usage-only chunk (`choices: []`)
/// followed by `data: [DONE]`. `ping`, thinking blocks and unknown events are skipped. An
/// `error` event becomes one OpenAI error chunk (`data: {"error":{..}}`) and ends the
/// translation: nothing after it is forwarded, and no `[DONE]` follows.
pub struct StreamTranslator {
    created: u64,
    id: String,
    model: String,
    usage: AnthropicUsage,
    stop_reason: Option<String>,
    finish_sent: bool,
    tools: Vec<ToolBlock>,
    partial: BytesMut,
    event_error: bool,
    done: bool,
}

impl StreamTranslator {
    /// A translator for one stream; `created` is the chunks' Unix time.
    pub fn new(created: u64) -> Self {
        Self {
            created,
            id: String::new(),
            model: String::new(),
            usage: AnthropicUsage::default(),
            stop_reason: None,
            finish_sent: false,
            tools: Vec::new(),
            partial: BytesMut::new(),
            event_error: false,
            done: false,
        }
    }

    /// Whether `message_stop` or an `error` event was seen: the translated stream is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The usage reported so far.
    pub fn usage(&self) -> AnthropicUsage {
        self.usage
    }

    /// Feeds bytes of the upstream stream (any split), appending translated events to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) {
        let mut partial = std::mem::take(&mut self.partial);
        let _ = split_lines(&mut partial, data, |line| {
            self.line(line, out);
            if self.done {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        self.partial = if self.done { BytesMut::new() } else { partial };
    }

    /// The upstream stream ended: handles a last line without its newline.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.partial.is_empty() && !self.done {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut BytesMut) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event_error = false;
            return;
        }
        if let Some(ev) = line.strip_prefix(b"event:") {
            self.event_error = ev.trim_ascii() == b"error";
            return;
        }
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        match serde_json::from_slice::<Event>(payload.trim_ascii()) {
            Ok(ev) => self.event(ev, out),
            Err(e) if self.event_error => {
                tracing::debug!(error = %e, "unreadable Anthropic error event");
                self.error(
                    Detail {
                        kind: "api_error".into(),
                        message: "The upstream provider sent an error event.".into(),
                    },
                    out,
                );
            }
            Err(e) => tracing::debug!(error = %e, "skipped an unreadable Anthropic stream event"),
        }
    }

    fn event(&mut self, ev: Event, out: &mut BytesMut) {
        match ev {
            Event::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage = message.usage;
                self.chunk(
                    out,
                    json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                           "logprobs": null, "finish_reason": null}),
                );
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } => self.text(text, out),
                Block::ToolUse { id, name, .. } => {
                    let tool = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.push(ToolBlock {
                        block: index,
                        index: tool,
                        sent_args: false,
                    });
                    self.tool_delta(
                        out,
                        json!({"index": tool, "id": id, "type": "function",
                               "function": {"name": name, "arguments": ""}}),
                    );
                }
                Block::Other => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.text(text, out),
                BlockDelta::InputJsonDelta { partial_json } => {
                    if partial_json.is_empty() {
                        return;
                    }
                    if let Some(t) = self.tools.iter_mut().find(|t| t.block == index) {
                        t.sent_args = true;
                        let tool = t.index;
                        self.tool_delta(
                            out,
                            json!({"index": tool, "function": {"arguments": partial_json}}),
                        );
                    }
                }
                BlockDelta::Other => {}
            },
            Event::ContentBlockStop { index } => {
                // A tool called without arguments streams none: clients parse "{}".
                if let Some(t) = self
                    .tools
                    .iter_mut()
                    .find(|t| t.block == index && !t.sent_args)
                {
                    t.sent_args = true;
                    let tool = t.index;
                    self.tool_delta(out, json!({"index": tool, "function": {"arguments": "{}"}}));
                }
            }
            Event::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    let mine = &mut self.usage;
                    mine.input_tokens = u.input_tokens.unwrap_or(mine.input_tokens);
                    mine.output_tokens = u.output_tokens.unwrap_or(mine.output_tokens);
                    mine.cache_creation_input_tokens = u
                        .cache_creation_input_tokens
                        .unwrap_or(mine.cache_creation_input_tokens);
                    mine.cache_read_input_tokens = u
                        .cache_read_input_tokens
                        .unwrap_or(mine.cache_read_input_tokens);
                }
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                    self.finish_chunk(out);
                }
            }
            Event::MessageStop {} => {
                self.finish_chunk(out);
                let usage = self.usage.to_openai();
                self.raw_chunk(out, Value::Array(Vec::new()), Some(&usage));
                out.put_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Event::Error { error } => self.error(error, out),
            Event::Other => {}
        }
    }

    fn text(&mut self, text: String, out: &mut BytesMut) {
        if !text.is_empty() {
            self.chunk(
                out,
                json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}),
            );
        }
    }

    fn tool_delta(&mut self, out: &mut BytesMut, call: Value) {
        self.chunk(
            out,
            json!({"index": 0, "delta": {"tool_calls": [call]}, "logprobs": null, "finish_reason": null}),
        );
    }

    fn finish_chunk(&mut self, out: &mut BytesMut) {
        if self.finish_sent {
            return;
        }
        self.finish_sent = true;
        let reason = finish_reason(self.stop_reason.as_deref());
        self.chunk(
            out,
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}),
        );
    }

    fn error(&mut self, detail: Detail, out: &mut BytesMut) {
        // Anthropic sends error events with a 200 status; the status only picks the type for
        // unknown kinds (server_error).
        let body = to_openai(StatusCode::INTERNAL_SERVER_ERROR, detail);
        out.put_slice(b"data: ");
        out.put_slice(&serde_json::to_vec(&body).unwrap_or_default());
        out.put_slice(b"\n\n");
        self.done = true;
    }

    fn chunk(&self, out: &mut BytesMut, choice: Value) {
        self.raw_chunk(out, Value::Array(vec![choice]), None);
    }

    fn raw_chunk(&self, out: &mut BytesMut, choices: Value, usage: Option<&rampart_core::Usage>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some(u), Some(obj)) = (usage, chunk.as_object_mut()) {
            obj.insert("usage".into(), json!(u));
        }
        out.put_slice(b"data: ");
        out.put_slice(chunk.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }
}

/// The upstream body (Anthropic SSE) read through a [`StreamTranslator`]: every frame is
/// translated as it arrives; the body ends after `message_stop` or an `error` event, and
/// passes upstream body errors on.
pub(crate) struct SseBody {
    inner: Body,
    translator: StreamTranslator,
    ended: bool,
}

impl SseBody {
    pub(crate) fn new(inner: Body, created: u64) -> Self {
        Self {
            inner,
            translator: StreamTranslator::new(created),
            ended: false,
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            let mut out = BytesMut::new();
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.translator.feed(&data, &mut out);
                    }
                    if this.translator.is_done() || this.inner.is_end_stream() {
                        this.translator.finish(&mut out);
                        this.ended = true;
                    }
                }
                Poll::Ready(None) => {
                    this.translator.finish(&mut out);
                    this.ended = true;
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
