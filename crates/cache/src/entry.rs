//! Entries: assembling a complete answer while it streams through, and replaying it as JSON or
//! SSE.
//!
//! An entry holds the answer as a [`ChatCompletion`] (content, refusal, tool calls, finish
//! reasons, logprobs, usage, id, model, created, fingerprint) plus its JSON body, whichever shape
//! filled it: a JSON fill keeps the provider's bytes; a stream fill is assembled from the chunks'
//! deltas and serialised once. Replay:
//!
//! - JSON: the stored body.
//! - SSE, per choice: a role chunk (`{"role":"assistant","content":""}`), one chunk with the
//!   whole content (and logprobs), one with the refusal, one with the tool calls, the finish
//!   chunk; then a usage-only chunk (`"choices":[]`) when the client asked for
//!   `stream_options.include_usage`; then `data: [DONE]`. Every chunk carries the original id,
//!   `created`, `model`, `system_fingerprint` and `service_tier`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use rampart_core::Usage;
use rampart_core::openai::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Content, Delta, Message,
};
use serde_json::{Map, Value};
use tokio::time::Instant;

/// Bytes counted per entry on top of its bodies (map slot, headers, bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

/// A stored answer.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    canonical: Bytes,
    completion: ChatCompletion,
    json: Bytes,
    model: Option<HeaderValue>,
    provider: Option<HeaderValue>,
    route: Option<HeaderValue>,
    inserted: Instant,
    ttl: Duration,
}

impl CacheEntry {
    /// An entry for the request `canonical`, answered by `completion` (`json` is its body).
    pub fn new(
        canonical: Bytes,
        completion: ChatCompletion,
        json: Bytes,
        inserted: Instant,
        ttl: Duration,
    ) -> Self {
        Self {
            canonical,
            completion,
            json,
            model: None,
            provider: None,
            route: None,
            inserted,
            ttl,
        }
    }

    /// The same entry with the `x-rampart-model` / `x-rampart-provider` of the original answer.
    pub fn with_served_by(
        mut self,
        model: Option<HeaderValue>,
        provider: Option<HeaderValue>,
    ) -> Self {
        self.model = model;
        self.provider = provider;
        self
    }

    /// The same entry with the `x-rampart-route` of the original answer (why that model).
    pub fn with_route(mut self, route: Option<HeaderValue>) -> Self {
        self.route = route;
        self
    }

    /// The original answer's `x-rampart-route`, when it had one.
    pub fn route_header(&self) -> Option<&HeaderValue> {
        self.route.as_ref()
    }

    /// The canonical request it answers.
    pub fn canonical(&self) -> &Bytes {
        &self.canonical
    }
    /// The answer.
    pub fn completion(&self) -> &ChatCompletion {
        &self.completion
    }
    /// The answer's JSON body.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
    /// `x-rampart-model` of the original answer.
    pub fn model_header(&self) -> Option<&HeaderValue> {
        self.model.as_ref()
    }
    /// `x-rampart-provider` of the original answer.
    pub fn provider_header(&self) -> Option<&HeaderValue> {
        self.provider.as_ref()
    }
    /// When it was stored.
    pub fn inserted(&self) -> Instant {
        self.inserted
    }
    /// How long it lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// When it expires.
    pub fn expires(&self) -> Instant {
        self.inserted + self.ttl
    }
    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.inserted)
    }
    /// Whether it is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.expires()
    }
    /// Its weight in bytes for the store's bound: the canonical request, the JSON body, the
    /// parsed answer (counted as large as its body) and a fixed overhead.
    pub fn weight(&self) -> u64 {
        (self.canonical.len() + 2 * self.json.len() + ENTRY_OVERHEAD) as u64
    }

    /// The SSE replay (see the module docs).
    pub fn sse(&self, include_usage: bool) -> Bytes {
        replay_sse(&self.completion, include_usage)
    }

    /// The time it has left at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires().saturating_duration_since(now)
    }

    /// The entry as bytes, for a store outside the process (see [`CacheEntry::decode`]).
    ///
    /// An [`Instant`] means nothing to another process, so the entry is written without one:
    /// its TTL is kept, and the reader rebuilds the insertion time from the time the entry has
    /// left in the store. The answer is kept as its JSON body (the parsed form is rebuilt from
    /// it). Layout, integers big-endian: `RCE1`, TTL in milliseconds (u64), then the canonical
    /// request, the JSON body and the `x-rampart-model`, `x-rampart-provider` and
    /// `x-rampart-route` values, each as a u32 length and its bytes (`u32::MAX`: absent).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// The length of [`CacheEntry::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        ENCODING_MAGIC.len()
            + 8
            + 4 * 5
            + self.canonical.len()
            + self.json.len()
            + [&self.model, &self.provider, &self.route]
                .iter()
                .map(|h| h.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }

    /// Appends [`CacheEntry::encode`]'s output to `out` (after a prefix of the store's own).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(ENCODING_MAGIC);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        out.extend_from_slice(&ttl_ms.to_be_bytes());
        put_field(out, Some(&self.canonical));
        put_field(out, Some(&self.json));
        for h in [&self.model, &self.provider, &self.route] {
            put_field(out, h.as_ref().map(HeaderValue::as_bytes));
        }
    }

    /// Reads an entry written by [`CacheEntry::encode`] that has `remaining` time left in its
    /// store at `now`: its age is its TTL minus `remaining`.
    pub fn decode(bytes: &[u8], remaining: Duration, now: Instant) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        if r.take(ENCODING_MAGIC.len())? != ENCODING_MAGIC {
            return Err(DecodeError("not a cache entry of this version"));
        }
        let ttl_bytes: [u8; 8] = r
            .take(8)?
            .try_into()
            .map_err(|_| DecodeError("truncated"))?;
        let ttl = Duration::from_millis(u64::from_be_bytes(ttl_bytes));
        let canonical = Bytes::copy_from_slice(r.field()?.ok_or(DecodeError("no request"))?);
        let json = Bytes::copy_from_slice(r.field()?.ok_or(DecodeError("no body"))?);
        let mut header = || -> Result<Option<HeaderValue>, DecodeError> {
            r.field()?
                .map(|b| HeaderValue::from_bytes(b).map_err(|_| DecodeError("bad header value")))
                .transpose()
        };
        let (model, provider, route) = (header()?, header()?, header()?);
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        let completion: ChatCompletion =
            serde_json::from_slice(&json).map_err(|_| DecodeError("the body is not an answer"))?;
        let remaining = remaining.min(ttl);
        // The insertion time, from the age in the store; when this process is younger than the
        // entry, an entry stored now with the time it has left (its age then reads 0).
        let (inserted, ttl) = match now.checked_sub(ttl - remaining) {
            Some(t) => (t, ttl),
            None => (now, remaining),
        };
        Ok(Self {
            canonical,
            completion,
            json,
            model,
            provider,
            route,
            inserted,
            ttl,
        })
    }
}

/// The first bytes of an encoded entry (the layout's version).
const ENCODING_MAGIC: &[u8] = b"RCE1";

/// An encoded entry could not be read (another version, or corrupted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache entry: {0}")]
pub struct DecodeError(&'static str);

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            // Entries are bounded far below 4 GiB by `max_entry_bytes`.
            let len = u32::try_from(b.len()).unwrap_or(u32::MAX - 1);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&b[..len as usize]);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| DecodeError("truncated"))?;
        match u32::from_be_bytes(len) {
            u32::MAX => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }
}

/// The body of a streamed replay of `c`.
pub fn replay_sse(c: &ChatCompletion, include_usage: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(self::estimate(c));
    let mut extra = Map::new();
    for k in ["system_fingerprint", "service_tier"] {
        if let Some(v) = c.extra.get(k).filter(|v| !v.is_null()) {
            extra.insert(k.to_owned(), v.clone());
        }
    }
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatCompletionChunk {
        id: c.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: c.created,
        model: c.model.clone(),
        choices,
        usage,
        extra: extra.clone(),
    };
    let mut push = |chunk: &ChatCompletionChunk| {
        out.extend_from_slice(b"data: ");
        // Serialising our own plain data cannot fail.
        let _ = serde_json::to_writer(bytes::BufMut::writer(&mut out), chunk);
        out.extend_from_slice(b"\n\n");
    };
    let choice = |index: u32, delta: Delta, finish: Option<String>, extra: Map<String, Value>| {
        let mut extra = extra;
        extra.entry("logprobs").or_insert(Value::Null);
        ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            extra,
        }
    };
    for ch in &c.choices {
        let m = &ch.message;
        let role = Delta {
            role: Some(if m.role.is_empty() {
                "assistant".to_owned()
            } else {
                m.role.clone()
            }),
            content: Some(String::new()),
            ..Delta::default()
        };
        push(&chunk(vec![choice(ch.index, role, None, Map::new())], None));
        let text = m.content.as_ref().map(|c| c.text().into_owned());
        let logprobs = ch.extra.get("logprobs").filter(|v| !v.is_null()).cloned();
        if text.as_deref().is_some_and(|t| !t.is_empty()) || logprobs.is_some() {
            let mut extra = Map::new();
            if let Some(lp) = logprobs {
                extra.insert("logprobs".to_owned(), lp);
            }
            let delta = Delta {
                content: text,
                ..Delta::default()
            };
            push(&chunk(vec![choice(ch.index, delta, None, extra)], None));
        }
        if let Some(refusal) = m.extra.get("refusal").and_then(Value::as_str)
            && !refusal.is_empty()
        {
            let delta = Delta {
                refusal: Some(refusal.to_owned()),
                ..Delta::default()
            };
            push(&chunk(
                vec![choice(ch.index, delta, None, Map::new())],
                None,
            ));
        }
        if let Some(calls) = m.tool_calls.as_ref().filter(|t| !t.is_empty()) {
            let calls = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    if let Value::Object(o) = &mut call {
                        o.entry("index").or_insert(Value::from(i));
                    }
                    call
                })
                .collect();
            let delta = Delta {
                tool_calls: Some(calls),
                ..Delta::default()
            };
            push(&chunk(
                vec![choice(ch.index, delta, None, Map::new())],
                None,
            ));
        }
        let finish = ch.finish_reason.clone().or_else(|| Some("stop".to_owned()));
        push(&chunk(
            vec![choice(ch.index, Delta::default(), finish, Map::new())],
            None,
        ));
    }
    if include_usage && let Some(u) = &c.usage {
        push(&chunk(Vec::new(), Some(u.clone())));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out.freeze()
}

fn estimate(c: &ChatCompletion) -> usize {
    c.choices
        .iter()
        .map(|ch| ch.message.content.as_ref().map_or(0, |c| c.text().len()) + 1024)
        .sum::<usize>()
        + 512
}

/// Builds an answer from the bytes of a response as they pass.
pub(crate) struct Assembler {
    sse: bool,
    limit: usize,
    overflow: bool,
    /// JSON: the body. SSE: the partial last line.
    buf: BytesMut,
    saw_done: bool,
    error: bool,
    event_is_error: bool,
    head: Option<ChatCompletionChunk>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<Usage>,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: String,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolAcc>,
    finish_reason: Option<String>,
    logprobs: Option<Vec<Value>>,
}

#[derive(Default)]
struct ToolAcc {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
    extra: Map<String, Value>,
}

impl Assembler {
    /// An assembler for an SSE or a JSON body, giving up beyond `limit` bytes.
    pub(crate) fn new(sse: bool, limit: usize) -> Self {
        Self {
            sse,
            limit,
            overflow: false,
            buf: BytesMut::new(),
            saw_done: false,
            error: false,
            event_is_error: false,
            head: None,
            choices: BTreeMap::new(),
            usage: None,
        }
    }

    /// Feeds the next bytes of the body.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.overflow || self.error {
            return;
        }
        if !self.sse {
            if self.buf.len() + data.len() > self.limit {
                self.overflow = true;
                self.buf = BytesMut::new();
            } else {
                self.buf.extend_from_slice(data);
            }
            return;
        }
        let mut partial = std::mem::take(&mut self.buf);
        let _ = rampart_core::sse::split_lines(&mut partial, data, |line| {
            self.line(line);
            std::ops::ControlFlow::<()>::Continue(())
        });
        self.buf = partial;
        if self.buf.len() > self.limit {
            self.overflow = true;
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event_is_error = false;
            return;
        }
        if let Some(ev) = line.strip_prefix(b"event:") {
            if ev.trim_ascii_start().starts_with(b"error") {
                self.event_is_error = true;
                self.error = true;
            }
            return;
        }
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = payload.trim_ascii_start();
        if payload == b"[DONE]" {
            self.saw_done = true;
            return;
        }
        if self.event_is_error || self.saw_done {
            self.error = true;
            return;
        }
        let chunk: ChatCompletionChunk = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(_) => {
                // An error event (`{"error":..}`) or something we cannot replay.
                self.error = true;
                return;
            }
        };
        if chunk.extra.get("error").is_some_and(|e| !e.is_null()) {
            self.error = true;
            return;
        }
        self.total_guard(payload.len());
        self.chunk(chunk);
    }

    fn total_guard(&mut self, n: usize) {
        self.limit = self.limit.saturating_sub(n);
        if self.limit == 0 {
            self.overflow = true;
        }
    }

    fn chunk(&mut self, mut chunk: ChatCompletionChunk) {
        if let Some(u) = chunk.usage.take() {
            self.usage = Some(u);
        }
        for c in std::mem::take(&mut chunk.choices) {
            let acc = self.choices.entry(c.index).or_default();
            let d = c.delta;
            if acc.role.is_none() {
                acc.role = d.role;
            }
            if let Some(t) = d.content {
                acc.content.push_str(&t);
            }
            if let Some(r) = d.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(&r);
            }
            for call in d.tool_calls.into_iter().flatten() {
                let Value::Object(mut o) = call else { continue };
                let index = o.remove("index").and_then(|v| v.as_u64()).unwrap_or(0);
                let t = acc.tool_calls.entry(index).or_default();
                if let Some(id) = o.remove("id").filter(|v| !v.is_null()) {
                    t.id.get_or_insert(id);
                }
                if let Some(kind) = o.remove("type").filter(|v| !v.is_null()) {
                    t.kind.get_or_insert(kind);
                }
                if let Some(Value::Object(mut f)) = o.remove("function") {
                    if let Some(Value::String(n)) = f.remove("name") {
                        t.name.push_str(&n);
                    }
                    if let Some(Value::String(a)) = f.remove("arguments") {
                        t.arguments.push_str(&a);
                    }
                }
                for (k, v) in o {
                    t.extra.entry(k).or_insert(v);
                }
            }
            if let Some(fr) = c.finish_reason {
                acc.finish_reason = Some(fr);
            }
            if let Some(Value::Object(lp)) = c.extra.get("logprobs")
                && let Some(Value::Array(items)) = lp.get("content")
            {
                acc.logprobs
                    .get_or_insert_with(Vec::new)
                    .extend(items.iter().cloned());
            }
        }
        if self.head.is_none() {
            self.head = Some(chunk);
        }
    }

    /// The answer, when the body was a complete one (JSON that parses with a finish reason on
    /// every choice; or a stream with `[DONE]`, a finish reason on every choice and no error).
    /// `usage` fills in a usage chunk hidden from this client.
    pub(crate) fn finish(mut self, usage: Option<Usage>) -> Option<(ChatCompletion, Bytes)> {
        if self.overflow || self.error {
            return None;
        }
        if !self.sse {
            let body = self.buf.freeze();
            let c: ChatCompletion = serde_json::from_slice(&body).ok()?;
            if c.choices.is_empty()
                || c.choices.iter().any(|ch| ch.finish_reason.is_none())
                || c.extra.get("error").is_some_and(|e| !e.is_null())
            {
                return None;
            }
            return Some((c, body));
        }
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line);
        }
        if !self.saw_done || self.error || self.choices.is_empty() {
            return None;
        }
        if self.choices.values().any(|c| c.finish_reason.is_none()) {
            return None;
        }
        let head = self.head?;
        let mut extra = Map::new();
        for k in ["system_fingerprint", "service_tier"] {
            if let Some(v) = head.extra.get(k).filter(|v| !v.is_null()) {
                extra.insert(k.to_owned(), v.clone());
            }
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, acc)| {
                let tool_calls: Vec<Value> = acc
                    .tool_calls
                    .into_values()
                    .map(|t| {
                        let mut o = t.extra;
                        o.insert("id".to_owned(), t.id.unwrap_or(Value::Null));
                        o.insert(
                            "type".to_owned(),
                            t.kind.unwrap_or_else(|| Value::from("function")),
                        );
                        let mut f = Map::new();
                        f.insert("name".to_owned(), Value::from(t.name));
                        f.insert("arguments".to_owned(), Value::from(t.arguments));
                        o.insert("function".to_owned(), Value::Object(f));
                        Value::Object(o)
                    })
                    .collect();
                let has_tools = !tool_calls.is_empty();
                let mut mextra = Map::new();
                mextra.insert(
                    "refusal".to_owned(),
                    acc.refusal.map_or(Value::Null, Value::from),
                );
                let content = if acc.content.is_empty() && has_tools {
                    None
                } else {
                    Some(Content::Text(acc.content))
                };
                let mut cextra = Map::new();
                cextra.insert(
                    "logprobs".to_owned(),
                    acc.logprobs.map_or(Value::Null, |items| {
                        let mut o = Map::new();
                        o.insert("content".to_owned(), Value::Array(items));
                        Value::Object(o)
                    }),
                );
                Choice {
                    index,
                    message: Message {
                        role: acc.role.unwrap_or_else(|| "assistant".to_owned()),
                        content,
                        name: None,
                        tool_calls: has_tools.then_some(tool_calls),
                        tool_call_id: None,
                        extra: mextra,
                    },
                    finish_reason: acc.finish_reason,
                    extra: cextra,
                }
            })
            .collect();
        let completion = ChatCompletion {
            id: head.id,
            object: "chat.completion".to_owned(),
            created: head.created,
            model: head.model,
            choices,
            usage: self.usage.or(usage),
            extra,
        };
        let json = Bytes::from(serde_json::to_vec(&completion).ok()?);
        Some((completion, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_a_stream_with_tool_calls() {
        let mut a = Assembler::new(true, 1 << 20);
        let s = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        // Split at awkward places.
        for part in s.as_bytes().chunks(7) {
            a.push(part);
        }
        let (c, json) = a.finish(None).unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(c.choices[0].message.text(), "Hello");
        let call = &c.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(call["id"], "call_1");
        assert_eq!(c.extra["system_fingerprint"], "fp");
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["object"], "chat.completion");
        // And back to SSE, then assembled again: the same answer.
        let sse = replay_sse(&c, false);
        let mut b = Assembler::new(true, 1 << 20);
        b.push(&sse);
        let (c2, _) = b.finish(None).unwrap();
        assert_eq!(c2, c);
    }

    #[tokio::test(start_paused = true)]
    async fn encodes_and_decodes_with_the_age_from_the_time_left() {
        let json = Bytes::from_static(
            br#"{"id":"c1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        );
        let completion: ChatCompletion = serde_json::from_slice(&json).unwrap();
        let e = CacheEntry::new(
            Bytes::from_static(b"{\"model\":\"m\"}"),
            completion,
            json,
            Instant::now(),
            Duration::from_secs(60),
        )
        .with_served_by(Some(HeaderValue::from_static("m")), None)
        .with_route(Some(HeaderValue::from_static("explicit")));
        let bytes = e.encode();
        assert_eq!(bytes.len(), e.encoded_len());
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        let d = CacheEntry::decode(&bytes, Duration::from_secs(50), now).unwrap();
        assert_eq!(d.age(now), Duration::from_secs(10));
        assert_eq!(d.expires(), e.expires());
        assert_eq!(d.remaining(now), Duration::from_secs(50));
        assert_eq!(d.canonical(), e.canonical());
        assert_eq!(d.completion(), e.completion());
        assert_eq!(d.json(), e.json());
        assert_eq!(d.model_header(), e.model_header());
        assert_eq!(d.provider_header(), None);
        assert_eq!(d.route_header(), e.route_header());
        // Anything else is refused, never misread.
        for bad in [&bytes[..bytes.len() - 1], &bytes[1..], b"RCE1", b""] {
            assert!(CacheEntry::decode(bad, Duration::from_secs(1), now).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(CacheEntry::decode(&extra, Duration::from_secs(1), now).is_err());
    }

    #[test]
    fn incomplete_streams_are_refused() {
        let head = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
        let mut a = Assembler::new(true, 1 << 20);
        a.push(head.as_bytes());
        a.push(b"data: [DONE]\n\n");
        assert!(a.finish(None).is_none(), "no finish reason");
        let mut a = Assembler::new(true, 1 << 20);
        a.push(head.as_bytes());
        a.push(b"data: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n");
        assert!(a.finish(None).is_none(), "error event");
    }
}
