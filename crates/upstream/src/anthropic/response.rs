//! Messages API response → `chat.completion`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use rampart_core::openai::{PromptTokensDetails, Usage};
use rampart_core::{Body, BoxError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The largest Messages API JSON body translated.
const MAX_JSON: usize = 32 * 1024 * 1024;

/// The upstream's 2xx body is not a Messages API answer.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's answer is not a valid Anthropic Messages API response: {0}")]
pub struct InvalidResponse(pub String);

/// `usage` of the Messages API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AnthropicUsage {
    /// Input tokens after the last cache breakpoint (neither written to nor read from the cache).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl AnthropicUsage {
    /// The chat-completions usage: every input token (cache writes and reads included) is a
    /// prompt token, the reads are `prompt_tokens_details.cached_tokens` (priced as cached
    /// input), and the two cache figures are kept as `cache_creation_input_tokens` and
    /// `cache_read_input_tokens`.
    pub fn to_openai(&self) -> Usage {
        let prompt =
            self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens;
        let mut extra = Map::new();
        extra.insert(
            "cache_creation_input_tokens".into(),
            Value::from(self.cache_creation_input_tokens),
        );
        extra.insert(
            "cache_read_input_tokens".into(),
            Value::from(self.cache_read_input_tokens),
        );
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt + self.output_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(self.cache_read_input_tokens),
                extra: Map::new(),
            }),
            completion_tokens_details: None,
            extra,
        }
    }
}

/// The chat-completions `finish_reason` for a Messages API `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever comes next.
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct MessageResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// `thinking`, `redacted_thinking`, server tool blocks, ...: not part of the answer's text.
    #[serde(other)]
    Other,
}

/// Translates a Messages API JSON answer into a `chat.completion` body. `created` is its Unix
/// time (the Messages API has none).
pub fn translate_response(body: &[u8], created: u64) -> Result<Bytes, InvalidResponse> {
    let msg: MessageResponse =
        serde_json::from_slice(body).map_err(|e| InvalidResponse(e.to_string()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &msg.content {
        match block {
            Block::Text { text: t } => text.push_str(t),
            Block::ToolUse { id, name, input } => {
                let args = if input.is_null() {
                    "{}".to_owned()
                } else {
                    input.to_string()
                };
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": args }
                }));
            }
            Block::Other => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::from("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let out = json!({
        "id": msg.id,
        "object": "chat.completion",
        "created": created,
        "model": msg.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(msg.stop_reason.as_deref()),
        }],
        "usage": msg.usage.to_openai(),
    });
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| InvalidResponse(e.to_string()))
}

/// A Messages API JSON body read whole and handed on as one `chat.completion` frame; a body that
/// fails, is too large or does not parse is a body error.
pub(crate) struct JsonBody {
    inner: Body,
    first: Option<Bytes>,
    buf: BytesMut,
    created: u64,
    done: bool,
}

impl JsonBody {
    pub(crate) fn new(inner: Body, created: u64) -> Self {
        Self {
            inner,
            first: None,
            buf: BytesMut::new(),
            created,
            done: false,
        }
    }

    fn push(&mut self, data: Bytes) -> Result<(), BoxError> {
        let have = self.first.as_ref().map_or(0, Bytes::len) + self.buf.len();
        if have + data.len() > MAX_JSON {
            return Err(Box::new(InvalidResponse(format!(
                "the body is larger than {MAX_JSON} bytes"
            ))));
        }
        match self.first.take() {
            None if self.buf.is_empty() => self.first = Some(data),
            prev => {
                if let Some(prev) = prev {
                    self.buf.extend_from_slice(&prev);
                }
                self.buf.extend_from_slice(&data);
            }
        }
        Ok(())
    }
}

impl http_body::Body for JsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = this.push(data)
                    {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if !this.inner.is_end_stream() {
                        continue;
                    }
                }
                Poll::Ready(None) => {}
            }
            this.done = true;
            let whole = match this.first.take() {
                Some(b) => b,
                None => std::mem::take(&mut this.buf).freeze(),
            };
            return Poll::Ready(Some(
                translate_response(&whole, this.created)
                    .map(Frame::data)
                    .map_err(|e| Box::new(e) as BoxError),
            ));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
