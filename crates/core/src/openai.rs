//! OpenAI chat-completions wire types.
//!
//! [`ChatRequest`] is parsed once at the edge: the fields layers need are typed, `messages` and
//! every other member stay as raw JSON slices of the original bytes (no copy), and every member the
//! client sent — known or not — is forwarded upstream. Responses, stream chunks, usage and the
//! error body are plain serde types that keep unknown fields in `extra`.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Why a request body is not a valid chat-completions request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not a JSON object.
    #[error("Invalid JSON in request body: {0}")]
    InvalidJson(String),
    /// A required field is absent.
    #[error("Missing required parameter: '{0}'.")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("Invalid value for '{field}': {reason}")]
    InvalidValue {
        /// The field's name.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl RequestError {
    /// The OpenAI `error.code` for this problem.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::MissingField(_) => "missing_required_parameter",
            Self::InvalidValue { .. } => "invalid_value",
        }
    }
    /// The OpenAI `error.param` for this problem.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidJson(_) => None,
            Self::MissingField(f) => Some(f),
            Self::InvalidValue { field, .. } => Some(field),
        }
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Whether the client asked for a final usage-only chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Anything else the client put there.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A parsed chat-completions request.
///
/// Cheap to share behind an `Arc` (the edge adapter stores `Arc<ChatRequest>` in the request
/// extensions). Changing a member (`with_model`, `with_member`) returns a new request whose
/// [`ChatRequest::to_bytes`] serialises once; an unchanged request forwards its original bytes.
#[derive(Clone)]
pub struct ChatRequest {
    raw: Bytes,
    /// Every top-level member in the client's order: key and raw JSON value.
    members: Vec<(Box<str>, Bytes)>,
    modified: bool,
    model: String,
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u64>,
    seed: Option<i64>,
    user: Option<String>,
    /// `messages` typed on first use; shared by every clone (a rewrite for upstream clones the
    /// request: the typed messages must not be copied with it).
    messages: Arc<OnceLock<Result<Vec<Message>, RequestError>>>,
    /// How many messages there are, counted on first use (several layers estimate the prompt
    /// of one request: skimming `messages` once instead of at each).
    message_count: OnceLock<u64>,
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints message content.
        f.debug_struct("ChatRequest")
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("max_tokens", &self.max_output_tokens())
            .field("bytes", &self.raw.len())
            .finish_non_exhaustive()
    }
}

/// A key that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top level of the body: an object read as (key, raw value) pairs in one pass.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn typed<'a, T: Deserialize<'a>>(field: &str, raw: &'a RawValue) -> Result<T, RequestError> {
    serde_json::from_str(raw.get()).map_err(|e| RequestError::InvalidValue {
        field: field.to_owned(),
        reason: strip_position(&e),
    })
}

/// Deepest JSON nesting accepted in a request (serde_json's own limit for typed values).
pub const MAX_DEPTH: usize = 128;

/// Whether `json` nests arrays/objects deeper than `max`. Jumps over strings with `memchr`, so
/// the cost is in the structure, not the text.
fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => {
                i += 1;
                loop {
                    let Some(rest) = json.get(i..) else {
                        return false;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        None => return false,
                        Some(j) if rest[j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

impl ChatRequest {
    /// Parses a request body. One pass over the bytes; `messages` and unknown members are kept
    /// raw (slices of `raw`, no copy).
    pub fn parse(raw: Bytes) -> Result<Self, RequestError> {
        // Raw members are not typed here, so serde_json's recursion limit does not see them:
        // refuse absurd nesting up front (it would fail later, when a layer types `messages`).
        if nesting_exceeds(&raw, MAX_DEPTH) {
            return Err(RequestError::InvalidJson(format!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        let top: TopLevel<'_> =
            serde_json::from_slice(&raw).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        let base = raw.as_ptr() as usize;
        let mut req = ChatRequest {
            raw: raw.clone(),
            members: Vec::with_capacity(top.0.len()),
            modified: false,
            model: String::new(),
            stream: false,
            stream_options: None,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: None,
            top_p: None,
            n: None,
            seed: None,
            user: None,
            messages: Arc::default(),
            message_count: OnceLock::new(),
        };
        let mut have_model = false;
        let mut have_messages = false;
        for (key, value) in &top.0 {
            if req.members.iter().any(|(k, _)| **k == **key) {
                return Err(RequestError::InvalidJson(format!(
                    "duplicate key '{key}' in the request object"
                )));
            }
            let json = value.get();
            let null = json == "null";
            match key.as_ref() {
                "model" => {
                    req.model = typed::<String>("model", value)?;
                    if req.model.is_empty() {
                        return Err(RequestError::InvalidValue {
                            field: "model".into(),
                            reason: "must not be empty".into(),
                        });
                    }
                    have_model = true;
                }
                "messages" => {
                    if !json.starts_with('[') {
                        return Err(RequestError::InvalidValue {
                            field: "messages".into(),
                            reason: "expected an array of messages".into(),
                        });
                    }
                    if json[1..].trim_start().starts_with(']') {
                        return Err(RequestError::InvalidValue {
                            field: "messages".into(),
                            reason: "must contain at least one message".into(),
                        });
                    }
                    have_messages = true;
                }
                "stream" => req.stream = typed::<Option<bool>>("stream", value)?.unwrap_or(false),
                "stream_options" if !null => {
                    req.stream_options = Some(typed("stream_options", value)?)
                }
                "max_tokens" => req.max_tokens = typed("max_tokens", value)?,
                "max_completion_tokens" => {
                    req.max_completion_tokens = typed("max_completion_tokens", value)?
                }
                "temperature" => req.temperature = typed("temperature", value)?,
                "top_p" => req.top_p = typed("top_p", value)?,
                "n" => req.n = typed("n", value)?,
                "seed" => req.seed = typed("seed", value)?,
                "user" => req.user = typed("user", value)?,
                _ => {}
            }
            // `value` borrows from `raw`; its offset lets us keep a zero-copy slice.
            let start = json.as_ptr() as usize - base;
            let slice = raw.slice(start..start + json.len());
            req.members.push((Box::from(key.as_ref()), slice));
        }
        if !have_model {
            return Err(RequestError::MissingField("model"));
        }
        if !have_messages {
            return Err(RequestError::MissingField("messages"));
        }
        if let Some(t) = req.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(RequestError::InvalidValue {
                field: "temperature".into(),
                reason: format!("{t} is out of range; expected a number from 0 to 2"),
            });
        }
        if req.n == Some(0) {
            return Err(RequestError::InvalidValue {
                field: "n".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(req)
    }

    /// The requested model (or route name).
    pub fn model(&self) -> &str {
        &self.model
    }
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }
    /// The client's `stream_options`.
    pub fn stream_options(&self) -> Option<&StreamOptions> {
        self.stream_options.as_ref()
    }
    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
    /// `temperature`, when sent.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }
    /// `top_p`, when sent.
    pub fn top_p(&self) -> Option<f64> {
        self.top_p
    }
    /// `n`, when sent.
    pub fn n(&self) -> Option<u64> {
        self.n
    }
    /// `seed`, when sent.
    pub fn seed(&self) -> Option<i64> {
        self.seed
    }
    /// `user`, when sent.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The original request bytes.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The raw JSON of a top-level member.
    pub fn member(&self, key: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Every top-level member, in the client's order, as (key, raw JSON).
    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members.iter().map(|(k, v)| (&**k, v.as_ref()))
    }

    /// The raw JSON of `messages`.
    pub fn messages_raw(&self) -> &[u8] {
        self.member("messages").unwrap_or(b"[]")
    }

    /// `messages`, typed on first use and cached.
    pub fn messages(&self) -> Result<&[Message], RequestError> {
        self.messages
            .get_or_init(|| {
                serde_json::from_slice::<Vec<Message>>(self.messages_raw()).map_err(|e| {
                    RequestError::InvalidValue {
                        field: "messages".into(),
                        reason: strip_position(&e),
                    }
                })
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// A copy with `key` set to the raw JSON `value` (added at the end when absent).
    ///
    /// `value` must be valid JSON; typed views are updated for the known fields.
    pub fn with_member(&self, key: &str, value: Bytes) -> Result<Self, RequestError> {
        let mut next = self.clone();
        let raw = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
            .ok_or_else(|| RequestError::InvalidValue {
                field: key.to_owned(),
                reason: "not valid JSON".into(),
            })?;
        match key {
            "model" => next.model = typed("model", raw)?,
            "stream" => next.stream = typed::<Option<bool>>("stream", raw)?.unwrap_or(false),
            "stream_options" => next.stream_options = typed("stream_options", raw)?,
            "max_tokens" => next.max_tokens = typed("max_tokens", raw)?,
            "max_completion_tokens" => {
                next.max_completion_tokens = typed("max_completion_tokens", raw)?
            }
            "temperature" => next.temperature = typed("temperature", raw)?,
            "messages" => {
                next.messages = Arc::default();
                next.message_count = OnceLock::new();
            }
            _ => {}
        }
        match next.members.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, v)) => *v = value,
            None => next.members.push((Box::from(key), value)),
        }
        next.modified = true;
        Ok(next)
    }

    /// A copy asking for `model`.
    pub fn with_model(&self, model: &str) -> Self {
        let mut next = self.clone();
        next.model = model.to_owned();
        let value = Bytes::from(serde_json::Value::from(model).to_string());
        match next.members.iter_mut().find(|(k, _)| &**k == "model") {
            Some((_, v)) => *v = value,
            None => next.members.push((Box::from("model"), value)),
        }
        next.modified = true;
        next
    }

    /// A copy whose stream asks the upstream for the final usage chunk
    /// (`stream_options.include_usage = true`), keeping any other stream option.
    /// Returns `self` unchanged (cheap clone) for non-stream requests or when already asked.
    pub fn with_stream_usage(&self) -> Self {
        if !self.stream || self.wants_stream_usage() {
            return self.clone();
        }
        let mut opts = self.stream_options.clone().unwrap_or_default();
        opts.include_usage = Some(true);
        let value = Bytes::from(serde_json::to_vec(&opts).unwrap_or_default());
        let mut next = self.clone();
        next.stream_options = Some(opts);
        match next
            .members
            .iter_mut()
            .find(|(k, _)| &**k == "stream_options")
        {
            Some((_, v)) => *v = value,
            None => next.members.push((Box::from("stream_options"), value)),
        }
        next.modified = true;
        next
    }

    /// Whether any member changed since parsing.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The body to send upstream: the original bytes when unchanged, else one serialisation
    /// of every member in order.
    pub fn to_bytes(&self) -> Bytes {
        if !self.modified {
            return self.raw.clone();
        }
        let cap = self
            .members
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2;
        let mut out = BytesMut::with_capacity(cap);
        out.put_u8(b'{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            // A key is a plain string: serialising it cannot fail.
            let key = serde_json::to_vec(&**k).unwrap_or_else(|_| b"\"\"".to_vec());
            out.put_slice(&key);
            out.put_u8(b':');
            out.put_slice(v);
        }
        out.put_u8(b'}');
        out.freeze()
    }

    /// A rough prompt-token estimate: bytes of `messages` / 4, plus 4 tokens per message and 3
    /// for the reply's priming. Does not type `messages`; layers that need exact counts use a
    /// tokenizer.
    pub fn estimate_prompt_tokens(&self) -> u64 {
        let raw = self.messages_raw();
        (raw.len() as u64).div_ceil(4) + 4 * self.message_count().max(1) + 3
    }

    /// How many messages there are: from the typed messages when a layer already typed them,
    /// else by skimming the array without building anything.
    pub fn message_count(&self) -> u64 {
        *self.message_count.get_or_init(|| {
            if let Some(Ok(m)) = self.messages.get() {
                return m.len() as u64;
            }
            serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(self.messages_raw())
                .map_or(1, |v| v.len() as u64)
        })
    }
}

/// One message of `messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// Text or content parts; absent for some assistant tool-call messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type":"text","text":..}`, images, audio, ...).
    Parts(Vec<Value>),
}

impl Content {
    /// The text of the content: the string, or the `text` parts joined by newlines.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(s) => Cow::Borrowed(s),
            Content::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                Cow::Owned(texts.join("\n"))
            }
        }
    }
}

impl Message {
    /// The message's text (empty when it has none).
    pub fn text(&self) -> Cow<'_, str> {
        self.content
            .as_ref()
            .map(Content::text)
            .unwrap_or(Cow::Borrowed(""))
    }
}

/// Token usage as providers report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens, including cached ones.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion (output) tokens, including reasoning ones.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Details of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Details of the completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// Prompt tokens served from the provider's prompt cache.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
    /// Reasoning tokens within the completion tokens.
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the provider's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Anything else (audio tokens, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A non-streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Completion id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Anything else (`system_fingerprint`, `service_tier`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Index of the choice.
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Anything else (`logprobs`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One chunk of a streamed completion (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id (the same on every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The choices' deltas (empty on the usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Index of the choice.
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Why generation stopped, on the last content chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The delta of a chunk choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The role, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChunkChoice {
    /// Whether this choice carries content a client would see (text, refusal, tool calls or a
    /// finish reason) — the streaming commit point.
    pub fn is_content_bearing(&self) -> bool {
        self.delta.content.as_deref().is_some_and(|c| !c.is_empty())
            || self.delta.refusal.as_deref().is_some_and(|c| !c.is_empty())
            || self
                .delta
                .tool_calls
                .as_ref()
                .is_some_and(|t| !t.is_empty())
            || self.finish_reason.is_some()
    }
}

/// The OpenAI error body: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Human-readable message.
    pub message: String,
    /// Error type (`invalid_request_error`, `server_error`, `requests`, `tokens`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The parameter at fault, if any.
    pub param: Option<String>,
    /// Machine-readable code.
    pub code: Option<String>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelObject {
    /// Model id (alias) as clients request it.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Who serves it (the provider's configured name).
    pub owned_by: String,
}

/// The `GET /v1/models` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChatRequest, RequestError> {
        ChatRequest::parse(Bytes::from(s.to_owned()))
    }

    #[test]
    fn typed_fields_and_raw_members() {
        let r = parse(
            r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"stream":true,
               "stream_options":{"include_usage":true},"max_tokens":12,"temperature":0,"x_custom":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(r.model(), "gpt-4.1");
        assert!(r.is_stream());
        assert!(r.wants_stream_usage());
        assert_eq!(r.max_output_tokens(), Some(12));
        assert_eq!(r.temperature(), Some(0.0));
        assert_eq!(r.member("x_custom"), Some(&br#"{"a":[1,2]}"#[..]));
        assert_eq!(r.messages().unwrap()[0].text(), "hi");
        // Unchanged: the original bytes go upstream.
        assert_eq!(r.to_bytes(), r.raw().clone());
    }

    #[test]
    fn rewrite_keeps_unknown_members_and_order() {
        let r = parse(
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"zz":1,"stream":true}"#,
        )
        .unwrap();
        let r2 = r.with_model("b\"q").with_stream_usage();
        let v: Value = serde_json::from_slice(&r2.to_bytes()).unwrap();
        assert_eq!(v["model"], "b\"q");
        assert_eq!(v["zz"], 1);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][0]["content"], "x");
        let keys: Vec<&str> = r2.members().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["model", "messages", "zz", "stream", "stream_options"]
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(matches!(parse("{"), Err(RequestError::InvalidJson(_))));
        assert!(matches!(parse("[]"), Err(RequestError::InvalidJson(_))));
        assert_eq!(
            parse(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err(),
            RequestError::MissingField("model")
        );
        assert_eq!(
            parse(r#"{"model":"m"}"#).unwrap_err(),
            RequestError::MissingField("messages")
        );
        let e =
            parse(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"x"}"#).unwrap_err();
        assert_eq!(e.param(), Some("max_tokens"));
        let e = parse(r#"{"model":5,"messages":[]}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = parse(r#"{"model":"m","model":"n","messages":[{}]}"#).unwrap_err();
        assert!(matches!(e, RequestError::InvalidJson(_)));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"model\":\"m\",\"messages\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse(&deep).is_err());
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
        // Brackets inside strings do not count; escaped quotes do not end a string.
        let ok = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}\\\"{}"}}]}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(parse(&ok).is_ok(), "{ok}");
    }

    #[test]
    fn usage_details() {
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
                "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2,"x":1}}"#,
        )
        .unwrap();
        assert_eq!(u.cached_tokens(), 4);
        assert_eq!(u.reasoning_tokens(), 2);
        let back = serde_json::to_value(&u).unwrap();
        assert_eq!(back["completion_tokens_details"]["x"], 1);
    }
}
